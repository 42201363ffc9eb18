"""A backend with a service account's API key, through the official OpenAI SDK with a
static api_key: list models, a chat completion, a streamed one, embeddings."""
import json
import os

from openai import OpenAI

c = OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"], max_retries=0)
models = [m.id for m in c.models.list().data]
question = [{"role": "user", "content": "When does the cafeteria open?"}]
chat = c.chat.completions.create(model="mock-model", messages=question)
chunks = 0
streamed = ""
for chunk in c.chat.completions.create(model="mock-model", messages=question, stream=True):
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
emb = c.embeddings.create(model="text-embedding-3-small", input=["Reisekosten", "travel"])
print(json.dumps({
    "models": models,
    "chat": chat.choices[0].message.content,
    "stream": streamed,
    "stream_chunks": chunks,
    "embeddings": [len(d.embedding) for d in emb.data],
}))
