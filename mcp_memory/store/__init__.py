"""Where memories are kept: the Store protocol and its typed records; sqlite/ implements it."""
