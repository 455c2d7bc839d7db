"""Report rendering shared by every stage: figures (matplotlib) and the HTML pages."""
