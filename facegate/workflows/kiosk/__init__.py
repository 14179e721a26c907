"""Self-service kiosks: the registry of kiosks and their keys (``registry``), and the kiosk's
authentication decision (``authentication``)."""
