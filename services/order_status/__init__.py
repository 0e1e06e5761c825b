"""The order_status service."""
