"""The worker: consumers fetch messages, pools run them, results are stored, messages acked."""
