"""invaders: a reproducible DQN pipeline for Atari Space Invaders."""

import os

# Keep TensorFlow's C++ start-up chatter out of stage logs; set before anything can import TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
