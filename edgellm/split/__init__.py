"""The phone half of a split model: run the device artifact, encode the activation, call the server."""
