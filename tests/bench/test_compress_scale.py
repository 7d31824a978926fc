"""bench compress-scale: its table and JSON (the arms themselves run in tests/models/test_compress_cluster.py's
code paths; a full run takes minutes)."""

import json

from bench import compress_scale


def test_main_prints_the_table_and_writes_the_json(monkeypatch, tmp_path, capsys):
    arm = dict(ray_start_s=0.0, object_store_s=0.0, max_r2_difference=0.0, seconds_per_neuron=0.5, speedup=1.0)
    result = {
        "neurons": 4,
        "neurons_per_task": 2,
        "student_spec": {"filters": [8, 8], "image_size": 32},
        "n_distill_images": 1000,
        "teacher_seconds": 3.0,
        "params_teacher_ensemble": 40000,
        "teacher": {"members": 4, "params_member": 10000},
        "median_params_after": 1500.0,
        "median_teacher_to_compact": 26.7,
        "median_member_to_compact": 6.7,
        "median_param_ratio": 1.5,
        "arms": [
            arm | {"arm": "local", "seconds": 2.0, "object_store_share": 0.0},
            arm | {"arm": "ray, 2 workers", "seconds": 1.0, "speedup": 2.0, "object_store_s": 0.01},
        ],
    }
    result["arms"][1]["object_store_share"] = 0.01
    seen = {}
    monkeypatch.setattr(compress_scale, "run", lambda args: seen.setdefault("args", args) and result)
    out = tmp_path / "scale.json"
    assert compress_scale.main(["--neurons", "4", "--workers", "1", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ray, 2 workers" in table and "2.00x" in table and "27x smaller than the ensemble" in table
    assert json.loads(out.read_text())["arms"][1]["speedup"] == 2.0
    assert seen["args"].workers == [1, 2] and seen["args"].neurons_per_task == 2
