"""pydantic-ai's OpenAI chat model pointed at the gateway, extracting a pydantic model."""
from __future__ import annotations

from pydantic import BaseModel

from tests.fakes.openai_server import Scripted, tool_call_completion

MODEL = "gpt-4o-mini"


class City(BaseModel):
    name: str
    country: str
    population_millions: float


def test_agent_extracts_a_pydantic_model(served):
    """An Agent with output_type=City: its output tool reaches the upstream, the call comes back as City."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    served.upstream.push(Scripted(body=tool_call_completion(
        MODEL, "final_result", {"name": "Paris", "country": "France", "population_millions": 2.1})))
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=served.api, api_key=served.key))
    agent = Agent(model, output_type=City, retries=0)
    result = agent.run_sync("Paris is the capital of France, about 2.1 million people live there.")
    assert result.output == City(name="Paris", country="France", population_millions=2.1)
    sent = served.upstream_chat_bodies()
    assert len(sent) == 1
    assert [tool["function"]["name"] for tool in sent[0]["tools"]] == ["final_result"]
    assert set(sent[0]["tools"][0]["function"]["parameters"]["properties"]) == {
        "name", "country", "population_millions"}
