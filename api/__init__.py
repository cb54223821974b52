"""The HTTP edge that is not about conversations: errors as problem+json, bounded JSON in,
orjson out, rate limits, the client's address, and the request log with its request id.

chatproject's settings and URLs point here; the conversations app uses it; it uses neither.
"""
