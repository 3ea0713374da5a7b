"""A local Tebra (Kareo) SOAP 1.1 simulator for development and tests. No production code imports it."""
