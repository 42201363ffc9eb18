"""The "browser" the MCP Inspector opens (its BROWSER): a person at palisade's consent
page who signs in as PALISADE_TEST_USER / PALISADE_TEST_PASSWORD and allows, then the
browser follows the redirect to the Inspector's loopback callback. Logs what it did to
PALISADE_TEST_BROWSER_LOG."""
import os
import re
import sys
import urllib.parse
import urllib.request
from html import unescape


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main(url):
    log = open(os.environ["PALISADE_TEST_BROWSER_LOG"], "a")
    log.write(f"opened {url}\n")
    page = urllib.request.urlopen(url).read().decode()
    request = unescape(re.search(r'name="request" value="([^"]+)"', page).group(1))
    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    form = urllib.parse.urlencode({
        "request": request, "decision": "allow",
        "username": os.environ["PALISADE_TEST_USER"],
        "password": os.environ["PALISADE_TEST_PASSWORD"]}).encode()
    post = urllib.request.Request(origin + "/oauth/authorize", data=form,
                                  headers={"origin": origin})
    try:
        urllib.request.build_opener(NoRedirect).open(post)
        raise SystemExit("the consent was not answered with a redirect")
    except urllib.error.HTTPError as e:
        if e.code != 303:
            raise
        location = e.headers["location"]
    log.write(f"redirected {location.split('?')[0]}\n")
    answer = urllib.request.urlopen(location).status
    log.write(f"callback {answer}\n")


if __name__ == "__main__":
    main(sys.argv[1])
