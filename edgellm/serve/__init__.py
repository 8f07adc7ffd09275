"""The batching server for the cloud half of a split model (KServe v2 REST + gRPC). Built in a later issue."""
