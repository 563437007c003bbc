"""What people run: the command line (``cli``), the demo, the throughput bench and the HTML
report. Everything here sits on the public API (``anomgan.train/detect/load``)."""
