"""The Gradio rating app: a live model trained with PPO from human feedback."""
