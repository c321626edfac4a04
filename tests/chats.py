"""The chat prompts the SmolLM2 checks run (and ``benchmarks/quantized_accuracy.py``): short
questions, a system prompt, a multi-turn conversation, and one prompt over 400 tokens."""

LONG = " ".join(f"Item {i}: the {w} of the {v} is important for the {u}." for i, (w, v, u) in enumerate(
    zip(["colour", "weight", "speed", "price", "shape"] * 12, ["car", "boat", "house", "tree", "river"] * 12,
        ["owner", "city", "buyer", "painter", "farmer"] * 12)))
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
    [{"role": "system", "content": "You answer like a pirate."},
     {"role": "user", "content": "Explain how a rainbow forms."}],
    [{"role": "user", "content": "List five uses of Python, one per line."},
     {"role": "assistant", "content": "1. Web servers\n2. Data science"},
     {"role": "user", "content": "Continue the list with three more."}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Summarise the following list in one paragraph:\n" + LONG}],
]
