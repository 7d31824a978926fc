"""Per-neuron models of visual cortex. Pure torch: no sockets, no files it was not handed."""
