"""The local Lambda emulator (``emulator.LambdaEmulator``): its records (``models.py``) and its execution
environments (``pools.py``). The package re-exports nothing."""
