"""Server-rendered pages: search, exposure, maps, cells and labelling, uploads."""
