"""A small cookie-keeping HTTP client for the web pages (the security tests
send exactly the requests a forger could)."""
from __future__ import annotations

import re
import uuid
from http.cookies import SimpleCookie
from urllib.parse import urlencode

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0 Safari/537.36"


class WebClient:
    def __init__(self, srv):
        self.srv = srv
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []          # the last answer's Set-Cookie lines

    def csrf(self, html: bytes) -> str:
        m = re.search(rb'name="csrf" value="([^"]+)"', html)
        assert m, html[:500]
        return m.group(1).decode()

    def post_form(self, path, fields, csrf=True, page=None):
        if csrf and "csrf" not in fields:
            _, _, html = self.get(page or path)
            fields = dict(fields, csrf=self.csrf(html))
        return self.send("POST", path, urlencode(fields).encode(),
                         {"Content-Type": "application/x-www-form-urlencoded"})

    def get(self, path):
        return self.send("GET", path)

    def send(self, method, path, body=None, headers=None):
        h = {"User-Agent": BROWSER, "Accept": "text/html"}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        h.update(headers or {})
        conn = self.srv.connection()
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            self.set_cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
            for k, v in resp.getheaders():
                if k.lower() == "set-cookie":
                    jar = SimpleCookie(v)
                    for name, morsel in jar.items():
                        if morsel["max-age"] == "0" or not morsel.value:
                            self.cookies.pop(name, None)
                        else:
                            self.cookies[name] = morsel.value
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def sign_in(self, name, password):
        _, _, html = self.get("/.web/login")
        status, headers, _ = self.post_form("/.web/login", {"name": name, "password": password,
                                                            "csrf": self.csrf(html)})
        return status, headers

    def upload(self, folder_path, files: dict[str, bytes], csrf: str | None, headers=None):
        boundary = uuid.uuid4().hex
        parts = []
        if csrf is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'.encode())
        for name, data in files.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                         f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.send("POST", folder_path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                     **(headers or {})})


def signed_in(srv, who) -> WebClient:
    """A client signed in as `who` (name, password)."""
    web = WebClient(srv)
    status, _ = web.sign_in(*who)
    assert status == 303, status
    return web


def core(srv, what):
    """What the storage core of `srv` says now, `what(storage)`, read as a
    second process (an administrator) would."""
    from providers import config
    from providers.storage import Storage
    st = Storage.open(config.load(srv.config), upgrade=False)
    try:
        return what(st)
    finally:
        st.close()
