"""`make play`: a local web page to drive inside M's dream and watch the agent think.

`worldmodels.play.engine` holds the compiled steps (V, M and C, one jitted call per frame),
`worldmodels.play.server` the aiohttp server and its WebSocket, `static/` the page.
"""
