build-asan/src/smtp/smtp_parse.o: src/smtp/smtp_parse.c \
 src/smtp/smtp_parse.h src/msg/addr.h
src/smtp/smtp_parse.h:
src/msg/addr.h:
