build-asan/src/auth/sasl.o: src/auth/sasl.c src/auth/sasl.h \
 src/msg/base64.h
src/auth/sasl.h:
src/msg/base64.h:
