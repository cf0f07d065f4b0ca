"""flowerbed: federated learning strategies, scenarios and MLflow tracking on Flower."""

import os as _os

# Set before Flower and Ray are imported (both read them at import time); a user's
# own setting wins. Runs make no calls home, and Ray's per-run accelerator warning
# stays out of the terminal.
for _key, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}.items():
    _os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
