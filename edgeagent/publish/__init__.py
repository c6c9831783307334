"""MQTT: the durable outbox, the publisher stage, commands, Home Assistant discovery, the
embedded broker. The contract is docs/mqtt.md; payload schemas are in docs/mqtt/v1/."""
