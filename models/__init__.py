"""Per-neuron models of visual cortex, the Model part that fits them online (worker.py), a replay's stored
plans, and `cortexloop compress`. No sockets, no files it was not handed."""
