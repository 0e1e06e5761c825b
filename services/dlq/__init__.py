"""The dlq service."""
