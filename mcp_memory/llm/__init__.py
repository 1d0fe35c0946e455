"""Language models: the OpenAI-compatible client and sampling, embedders, and the prompts for summaries,
rolling summaries and fact extraction."""
