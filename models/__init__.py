"""posestream models: skeletons, fields (encoders + decoder), networks, checkpoints."""
