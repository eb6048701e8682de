"""Services: the running parts the daemons are composed of.

Between the daemons (server, client, mirror, move_it, dispatcher, s3downloader) and the
core (config, messaging, matching, movers, state, metrics): a daemon configures these
parts and wires them together; the parts never import a daemon.
"""
