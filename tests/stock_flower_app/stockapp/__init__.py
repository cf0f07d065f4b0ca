"""stockapp: a Flower / PyTorch app, as Flower's quickstart-pytorch, on digits."""
