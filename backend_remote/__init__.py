"""Gen3D remote backend: the RunPod serverless worker, the self-hosted RunPod-compatible server, and
result storage (S3/R2/MinIO through boto3, or the server's own disk behind signed URLs)."""
