"""An MCP client (the official Python SDK, Streamable HTTP) against palisade's /mcp:
lists the tools, calls search_documents, lists the caller's threads, tries to read
another user's thread and reads one of the caller's own (OWN_THREAD, if set). Prints
one line: MCP-RESULT <json>."""
import asyncio
import json
import os

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def main():
    headers = {"Authorization": "Bearer " + os.environ["TOKEN"]}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(os.environ["MCP_URL"], http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = [t.name for t in (await session.list_tools()).tools]
                # Arguments that try to widen the scope are ignored.
                result = await session.call_tool("search_documents", {
                    "query": os.environ["QUERY"], "tenant": "other", "roles": ["hr", "exec"],
                    "filter": "*"})
                text = "\n".join(c.text for c in result.content if c.type == "text")
                resources = [r.name for r in (await session.list_resources()).resources]
                foreign = os.environ.get("FOREIGN_THREAD")
                foreign_read = None
                if foreign:
                    try:
                        await session.read_resource(f"palisade://threads/{foreign}")
                        foreign_read = "read"
                    except Exception:  # the SDK raises on a JSON-RPC error
                        foreign_read = "refused"
                own = os.environ.get("OWN_THREAD")
                own_read = None
                if own:
                    res = await session.read_resource(f"palisade://threads/{own}")
                    own_read = "\n".join(c.text for c in res.contents)
                print("MCP-RESULT " + json.dumps({"tools": tools, "text": text,
                                                  "resources": resources,
                                                  "foreign_read": foreign_read,
                                                  "own_read": own_read}))


asyncio.run(main())
