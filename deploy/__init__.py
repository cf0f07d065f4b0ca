"""Deployment helpers: the launch scripts' checks (``python -m flowerbed.deploy.probe``)."""
