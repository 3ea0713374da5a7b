"""Contract tests: the simulator and the project held against Tebra's real, published WSDL."""
