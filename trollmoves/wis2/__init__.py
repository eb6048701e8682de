"""WIS2 building blocks for the bridge daemon (``trollmoves.wis2_bridge``).

WIS2, the WMO Information System, announces each file with a WIS2 Notification Message
(a GeoJSON document) on MQTT brokers. The modules here each do one job, without
metrics or daemon machinery, so that the config (topic templates, filters) and the
bridge can both use them:

* ``topics``: WIS2 topic levels, templates and validation;
* ``notification``: build, encode and parse notification messages;
* ``mqtt``: paho-mqtt publisher and subscriber with PUBACK reason codes and manual acks;
* ``fetch``: streaming, verified, atomic downloads of announced files;
* ``seen``: the SQLite store that keeps duplicates out across restarts, and its outbox.
"""
