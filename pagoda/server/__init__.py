"""The aiohttp server speaking the OpenAI HTTP API."""
