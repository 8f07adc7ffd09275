"""Shared by the split-generation tests (server sessions and the phone-side client): prompts, the unsplit
model's greedy tokens, and the tokens a client streams."""

PROMPTS = [
    "The with statement is used to wrap the execution of a block",
    "A class definition defines a class object",
    "The try statement specifies exception handlers",
    "Names refer to objects. Names are introduced by name binding operations",
]


def hf_greedy(adapter, prompt, n):
    from edgellm.models.decoder_step import reference_greedy

    return reference_greedy(adapter, prompt, n)


def tokens(client, prompt_ids, n, **kw):
    return [t["token"] for t in client.generate(prompt_ids, n, stop_at_eos=False, **kw)]
