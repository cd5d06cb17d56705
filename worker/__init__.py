"""The Celery worker: builds each message, reads attachments, delivers over SMTP, retries."""
