#!/bin/sh
# Deploy the stack's template (localstack/stack.json: `python -m chalicelib.aws.template` writes it from the
# same data as `modelport aws package`) once LocalStack is ready.
set -eu
awslocal cloudformation deploy \
  --stack-name modelport-local \
  --template-file /etc/localstack/modelport/stack.json \
  --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM
awslocal cloudformation describe-stacks --stack-name modelport-local \
  --query 'Stacks[0].StackStatus' --output text
