return "A0"
