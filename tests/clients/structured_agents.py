"""Real clients through palisade against the strict stand-in upstream: the OpenAI
Agents SDK on its default model (the Responses API) running a tool loop, streamed and
not, and continuing a kept conversation by previous_response_id; LangChain's
with_structured_output(strict=True); the openai SDK's parse(). The Rust test scripts the
stand-in's answers in this order and checks what reached it."""
import asyncio
import json
import os
from typing import Optional

from pydantic import BaseModel, Field
from openai import AsyncOpenAI, OpenAI
from agents import (Agent, ModelSettings, Runner, function_tool, set_default_openai_client,
                    set_tracing_disabled)
from langchain_openai import ChatOpenAI

BASE = os.environ["BASE"] + "/v1"
TOKEN = os.environ["TOKEN"]
MODEL = os.environ["MODEL"]
set_tracing_disabled(True)  # the SDK would otherwise export traces to OpenAI
set_default_openai_client(AsyncOpenAI(base_url=BASE, api_key=TOKEN, max_retries=0),
                          use_for_tracing=False)


@function_tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"The weather in {city} is sunny"


async def agents():
    agent = Agent(name="Weather", instructions="You are a helpful agent.",
                  tools=[get_weather], model=MODEL)
    r = await Runner.run(agent, "What's the weather in Tokyo?")
    assert r.final_output == "Sunny in Tokyo.", r.final_output
    s = Runner.run_streamed(agent, "What's the weather in Oslo?")
    deltas = []
    async for ev in s.stream_events():
        if ev.type == "raw_response_event" and ev.data.type == "response.output_text.delta":
            deltas.append(ev.data.delta)
    assert s.final_output == "Sunny in Oslo.", s.final_output
    assert "".join(deltas) == "Sunny in Oslo.", deltas
    kept = Agent(name="Memory", instructions="Remember names.", model=MODEL,
                 model_settings=ModelSettings(store=True))
    r1 = await Runner.run(kept, "My name is Ada.")
    assert r1.final_output == "Hello Ada.", r1.final_output
    assert r1.last_response_id and r1.last_response_id.startswith("resp_"), r1.last_response_id
    r2 = await Runner.run(kept, "What is my name?", previous_response_id=r1.last_response_id)
    assert r2.final_output == "Your name is Ada.", r2.final_output
    print("KEPT-RESPONSE", r2.last_response_id)


class Joke(BaseModel):
    """Joke to tell user."""
    setup: str = Field(description="The setup of the joke")
    punchline: str = Field(description="The punchline to the joke")
    rating: Optional[int] = Field(default=None, description="How funny the joke is, from 1 to 10")


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


def structured():
    llm = ChatOpenAI(model=MODEL, base_url=BASE, api_key=TOKEN, max_retries=0)
    joke = llm.with_structured_output(Joke, strict=True).invoke("Tell me a joke about cats")
    assert joke == Joke(setup="Why cats?", punchline="Because.", rating=None), joke
    c = OpenAI(base_url=BASE, api_key=TOKEN, max_retries=0)
    r = c.chat.completions.parse(model=MODEL, messages=[
        {"role": "system", "content": "Extract the event information."},
        {"role": "user", "content": "Alice and Bob are going to a science fair on Friday."}],
        response_format=CalendarEvent)
    assert r.choices[0].message.parsed == CalendarEvent(
        name="Science Fair", date="Friday", participants=["Alice", "Bob"]), r


asyncio.run(agents())
structured()
print("STRUCTURED-AGENTS-OK")
