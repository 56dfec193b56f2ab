"""Prompts that are in no dataset of this repository: the held-out set of the learning benchmarks."""

HELD_OUT = [
    "What is your opinion of bicycles?",
    "What should I cook for dinner tonight?",
    "Describe a walk in a park.",
    "How was your week?",
    "Write two sentences about trains.",
    "Describe the sound of the ocean at night.",
    "Explain why people keep pets.",
    "Describe the colour blue to a friend.",
    "What is a good way to start the morning?",
    "Tell me about a city you would like to visit.",
    "How do plants grow?",
    "Write a note to a neighbour.",
]
