"""Server side: the ServerApp, the simulation launcher, MLflow tracking and the CLI."""
