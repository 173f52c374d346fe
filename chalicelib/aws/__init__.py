"""The boto3 adapters of the ports (DynamoDB, S3) and the infrastructure they run on.

Each adapter takes its low-level client, so the same code runs against AWS, moto and LocalStack; only the
client's ``endpoint_url`` differs.
"""

from __future__ import annotations
