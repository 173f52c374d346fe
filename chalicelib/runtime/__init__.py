"""Code that runs inside the model container. It imports neither chalice, boto3 nor the control plane."""
