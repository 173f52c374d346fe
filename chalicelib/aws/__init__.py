"""The boto3 adapters of the ports (DynamoDB, S3, Lambda, Step Functions, ECR, secrets) and the
infrastructure they run on.

Each adapter takes its low-level client, so the same code runs against AWS, moto and LocalStack; only the
client's ``endpoint_url`` differs. What leaves an adapter is a domain error: ``outage.translates_outages``
turns a service that did not answer into ``Unavailable``.
"""
