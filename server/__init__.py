"""mservices: the Tornado application, its handlers, realtime servers and command line."""
