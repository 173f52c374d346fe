"""The local stack: a Lambda emulator (Runtime API server + launchers) that runs model images or processes,
and the edge endpoint that puts it and moto behind one AWS endpoint (docs/local-stack.md).

Nothing here imports boto3 or chalice: the emulator may run anywhere (moto is imported by ``start_moto``
only, the docker SDK only through the client a ``ContainerLauncher`` is given). The package re-exports
nothing: import from the module that defines a name.
"""
