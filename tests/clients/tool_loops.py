"""Two-step tool loops through palisade with real client libraries: the official
OpenAI SDK and LangChain's ChatOpenAI, each stateless and in a stored thread.
The mock upstream answers each loop with a get_weather call, then with text."""
import json
import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI

BASE = os.environ["BASE"] + "/v1"
TOKEN = os.environ["TOKEN"]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]


def weather(city):
    return f"18 degrees in {city}"


def sdk_loop(thread=None):
    c = OpenAI(base_url=BASE, api_key=TOKEN)
    headers = {"X-Palisade-Thread": thread} if thread else None
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model="mock-model", messages=messages, tools=TOOLS,
                                  extra_headers=headers)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls", r
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather", msg
    messages.append(msg.model_dump(exclude_none=True))
    for call in msg.tool_calls:
        args = json.loads(call.function.arguments)
        messages.append({"role": "tool", "tool_call_id": call.id,
                         "content": weather(args["city"])})
    r = c.chat.completions.create(model="mock-model", messages=messages, tools=TOOLS,
                                  extra_headers=headers)
    assert r.choices[0].message.content.startswith("It is sunny"), r
    assert r.usage.total_tokens > 0, r


@tool
def get_weather(city: str) -> str:
    """Current weather in a city"""
    return weather(city)


def langchain_loop(thread=None):
    llm = ChatOpenAI(model="mock-model", base_url=BASE, api_key=TOKEN,
                     default_headers={"X-Palisade-Thread": thread} if thread else None)
    agent = llm.bind_tools([get_weather])
    messages = [HumanMessage("What is the weather in Paris?")]
    ai = agent.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather", ai
    messages.append(ai)
    for call in ai.tool_calls:
        messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = agent.invoke(messages)
    assert final.content.startswith("It is sunny"), final


sdk_loop()
sdk_loop(os.environ["THREAD_SDK"])
langchain_loop()
langchain_loop(os.environ["THREAD_LC"])
print("TOOL-LOOPS-OK")
