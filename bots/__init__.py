"""What a bot is: strategies, the order gateway, market feeds and exchange adapters."""
