"""What an idea becomes, with no torch and no database: the request and its rules, presets, palettes, logos, words."""
