"""Client side: the ClientApp and its local trainers."""
