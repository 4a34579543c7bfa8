"""Compatibility: the clients people point at the gateway (openai, langchain-openai, litellm,
pydantic-ai), each against the gateway over real HTTP, routed to a local OpenAI fake that answers as
OpenAI does today; each test checks what reached the upstream and what reached the client."""
