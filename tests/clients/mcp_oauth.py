"""The official MCP Python SDK's OAuth client provider against palisade's /mcp, with no
token given: it gets a 401, discovers the protected-resource and authorization-server
metadata, registers itself, runs the authorization code flow with PKCE and gets tokens,
then calls search_documents. The person in the middle is scripted: the redirect handler
opens the consent page palisade serves, signs in as USERNAME/PASSWORD and allows, and
hands the code from the redirect back to the SDK (no browser). Prints one line:
MCP-OAUTH <json> with the result and the tokens the SDK stored."""
import asyncio
import json
import os
import re
from html import unescape
from urllib.parse import parse_qs, urlparse

import httpx
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT = "http://127.0.0.1:33418/callback"


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info: OAuthClientInformationFull):
        self.client = info


seen = {}


async def person_at_the_consent_page(url: str):
    """What a person does in the browser: open the page, sign in, allow."""
    seen["authorize_url"] = url
    async with httpx.AsyncClient(follow_redirects=False) as http:
        page = await http.get(url)
        assert page.status_code == 200, page.text
        seen["page_csp"] = page.headers.get("content-security-policy")
        request = unescape(re.search(r'name="request" value="([^"]+)"', page.text).group(1))
        origin = f"{urlparse(url).scheme}://{urlparse(url).netloc}"
        answer = await http.post(
            origin + "/oauth/authorize",
            data={"request": request, "username": os.environ["USERNAME"],
                  "password": os.environ["PASSWORD"], "decision": "allow"},
            headers={"origin": origin})
        assert answer.status_code == 303, answer.text
        seen["location"] = answer.headers["location"]


async def back_from_the_browser() -> AuthorizationCodeResult:
    location = urlparse(seen["location"])
    assert location.geturl().startswith(REDIRECT), location.geturl()
    q = parse_qs(location.query)
    return AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0],
                                   iss=q.get("iss", [None])[0])


async def main():
    storage = Memory()
    auth = OAuthClientProvider(
        server_url=os.environ["MCP_URL"],
        client_metadata=OAuthClientMetadata(
            client_name="Scripted MCP client", redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"]),
        storage=storage,
        redirect_handler=person_at_the_consent_page,
        callback_handler=back_from_the_browser,
    )
    async with create_mcp_http_client(auth=auth) as http:
        async with streamable_http_client(os.environ["MCP_URL"], http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("search_documents", {"query": os.environ["QUERY"]})
                text = "\n".join(c.text for c in result.content if c.type == "text")
    print("MCP-OAUTH " + json.dumps({
        "text": text,
        "client_id": storage.client.client_id,
        "access_token": storage.tokens.access_token,
        "refresh_token": storage.tokens.refresh_token,
        "authorize_url": seen["authorize_url"],
        "page_csp": seen["page_csp"],
    }))


asyncio.run(main())
