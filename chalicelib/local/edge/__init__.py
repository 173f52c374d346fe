"""The local stack's one AWS endpoint: Lambda -> the emulator, StartSyncExecution emulated, the rest -> moto.

boto3 clients (the control plane, the CLI, tests) and moto's own Step Functions interpreter all talk to
this endpoint, so a state machine's Lambda tasks run real model functions. Routing (``server.py``):

- a request signed for the ``lambda`` service (or, unsigned, under ``/2015-03-31/functions``) is
  answered by the ``LambdaEmulator`` (``responses.lambda_reply``);
- ``AWSStepFunctions.StartSyncExecution`` (which moto lacks) runs in process by ``chalicelib.local.asl``
  when the state machine's definition is in its subset (the definition read once per ARN with
  ``DescribeStateMachine``, forgotten when an ``UpdateStateMachine``/``DeleteStateMachine`` passes through
  here): its Lambda tasks call the emulator directly, ~100 ms less per execution than moto's interpreter.
  Any other definition starts the execution on moto and polls ``DescribeExecution`` until it ends, within
  ``sync_timeout_s`` (``responses.sync_execution``);
- ``AWSStepFunctions.StartExecution`` without a ``name`` gets a generated one, as on AWS (moto names
  every unnamed execution ``None``, so the second one with another input fails);
- everything else is forwarded to moto as it came (``upstream.py``); moto itself is started and patched
  by ``moto.py``.

Every accepted socket gets TCP_NODELAY, and connections are HTTP/1.1 keep-alive: with Nagle's
algorithm on, delayed ACKs add ~40 ms to each small response. The package re-exports nothing.
"""
