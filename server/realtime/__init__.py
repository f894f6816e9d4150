"""Realtime: chat rooms shared by WebSocket and TCP clients, across processes over Redis.

``hub`` knows rooms, presence, history and fan-out but no transport; ``bus`` carries encoded
frames between processes; adapters (WebSocket, TCP) turn connections into hub members.
"""
